"""Retrieval from the PACS: a study brought into the node by C-MOVE, C-GET or WADO-RS,
every instance ending in the node's own receive path (``node.store``)."""
