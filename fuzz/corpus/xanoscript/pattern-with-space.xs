realtime_channel "a b" {}
