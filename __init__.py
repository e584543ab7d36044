"""ipa: drives a piece of software work to a reviewed change in a git repository, with AI
coding agents in isolated workspaces, every task a pod and every change an event.

Layers, each importing only those below it: ``ui`` → ``supervisor`` → ``pods`` →
``projections`` → ``eventstore`` → ``domain``.
"""

__version__ = "0.1.0"
