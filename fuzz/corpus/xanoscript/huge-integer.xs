realtime_channel "b" {
  settings = { message_history: 99999999999999999999999 }
}
