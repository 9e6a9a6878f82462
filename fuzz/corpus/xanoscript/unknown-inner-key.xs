realtime_channel "b" {
  public_messaging = { active: true, loud: true }
}
