"""Files: uploads streamed to disk, typed by their content, stored by content hash behind
a small blob interface, attached to messages, and removed when nothing uses them."""
