"""Load testing: the camera simulator and the viewer swarm."""
