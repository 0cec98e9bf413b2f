"""The README's first command: index the sample clips, query with edited copies, print the ranking."""
