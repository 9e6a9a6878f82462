realtime_channel "forum" {
  settings = { nested_channels: true, message_history: 250, presence: true }
}
realtime_channel "forum/*" { active = false }
