realtime_chanel "a" {}
