realtime_channel "b" {
  active = true
  active = false
}
