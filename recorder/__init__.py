"""Recording: rolling MP4 segments, their index and retention."""
