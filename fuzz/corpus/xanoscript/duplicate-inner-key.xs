realtime_channel "b" {
  settings = { presence: true, presence: false }
}
