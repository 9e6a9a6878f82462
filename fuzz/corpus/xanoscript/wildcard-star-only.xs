realtime_channel "*" {
  private_messaging = { active: true, auth: true } // trailing comment
}
