"""A minimal Django Channels app with the seed's echo consumer and a group broadcast (bench peer)."""
