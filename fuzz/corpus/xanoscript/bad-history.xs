realtime_channel "b" {
  settings = { message_history: 30 }
}
