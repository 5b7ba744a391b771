"""Engine: lazy DFA over the NFA, token masks, completion distances."""
