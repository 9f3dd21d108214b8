"""Tasks: the head, loss, metrics and prediction decoding of one kind of target."""
