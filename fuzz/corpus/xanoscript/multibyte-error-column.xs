realtime_channel "日本" {
  description = "ü" ü
}
