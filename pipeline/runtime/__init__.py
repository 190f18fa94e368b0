"""The delivery loop and its parts: transport, checkpoint, sender, executor, dead letters, sensors."""
