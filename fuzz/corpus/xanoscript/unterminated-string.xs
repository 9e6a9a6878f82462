realtime_channel "chat {
}
