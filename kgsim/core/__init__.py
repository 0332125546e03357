"""The bottom layer: the config tree, random streams, names, edge sets, token rows and file I/O.

Nothing here imports another kgsim layer.
"""
