"""The failover control plane: the director (the only thing the data path asks), the
pure state machine and its events, the controller that performs its actions, the hold
queue, the state file."""
