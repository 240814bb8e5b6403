"""Text in, tokens out: vocabularies (characters, bytes), corpora, line mode, prepare."""
