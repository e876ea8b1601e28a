package apns

// WithStartClaimedHook makes Start call f once it has claimed the start and let go of the
// client's lock, before it starts the transport: the window in which Stop may run.
func WithStartClaimedHook(f func()) Option { return func(s *settings) { s.startClaimed = f } }
