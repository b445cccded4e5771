"""What operators see: Prometheus metrics (`metrics`), alerts pushed to the console
(`alerts`), and abuse events that feed them (`abuse`)."""
