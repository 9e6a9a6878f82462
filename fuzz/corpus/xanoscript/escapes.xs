realtime_channel "es\u00e7ape\/x" {
  description = "tab\t quote\" backslash\\ nl\n cr\r \u0041"
}
