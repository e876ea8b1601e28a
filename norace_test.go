//go:build !race

package apns_test

// raceEnabled tells TestMain that the race detector is on.
const raceEnabled = false
