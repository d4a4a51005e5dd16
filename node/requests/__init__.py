"""Analysis on request: the workitems a RIS or worklist asks the node to perform (a study
to retrieve from the PACS and analyse), from the claim to COMPLETED or CANCELED."""
