"""Who is calling: tokens (`tokens`), passwords (`passwords`), accounts (`accounts`)."""
