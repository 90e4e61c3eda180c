"""Games behind the core's `Game` seam (`worldmodel.game`), one package each; each imports only
the core (`worldmodel`), never `memory` or `simulator`, and registers itself on import."""
