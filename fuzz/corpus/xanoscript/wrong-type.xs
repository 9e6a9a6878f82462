realtime_channel "b" {
  active = "yes"
}
