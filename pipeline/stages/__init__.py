"""The four stage functions. Each takes a batch of records and publishes or writes its
outputs; the consumers in `consumers/` only wire topics to them."""
