//! parlo-fsm: the call state machine.
