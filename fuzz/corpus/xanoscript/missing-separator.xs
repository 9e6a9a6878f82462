realtime_channel "a" { active = true description = "x" }
