"""The analysts' review console (`secanalyst serve`): server-rendered pages and /api/."""
