"""Judging the world model: the evaluation against the real game (`evaluate`, its rollouts in
`prediction`), frame metrics (`metrics`), speed (`bench`), the model card (`model_card`), what
every report carries (`reports`) and the figures (`plots`)."""
