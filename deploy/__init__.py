"""The docker-compose stack's files (docs/compose.md); ``deploy.app`` holds its Python apps."""
