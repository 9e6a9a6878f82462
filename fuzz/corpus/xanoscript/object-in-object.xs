realtime_channel "b" {
  settings = { presence: { x: 1 } }
}
