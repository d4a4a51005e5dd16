"""Pull mode: the node as an AIW-I Task Performer of another UPS provider's worklist."""
