realtime_channel "b" {
  colour = "blue"
}
