realtime_channel "crlf" {
  active = false
  description = "windows"
}
