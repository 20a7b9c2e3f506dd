"""Wire formats: RTSP, SDP, RTP, H.264/H.265/AAC bitstreams, FLV, MP4 and HLS."""
