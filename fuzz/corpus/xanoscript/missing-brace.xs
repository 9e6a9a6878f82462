realtime_channel "a" 
