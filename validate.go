package apns

// This file holds the checks of the values the HTTP/2 and broadcast requests carry in
// headers, made before a request is built: a value net/http refuses to send would otherwise
// fail every attempt as if the connection were lost.

import "bytes"

// isUUID reports whether s is a canonical lowercase UUID (8-4-4-4-12 hexadecimal digits),
// the form APNs takes for apns-id and apns-request-id (PROTOCOL.md §4.2, §5.2).
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return false
			}
		}
	}
	return true
}

// hasControl reports whether s holds a control character (below 0x20, or DEL), which cannot
// go in a header value.
func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c == 0x7f {
			return true
		}
	}
	return false
}

// checkHeaderFields checks a notification's apns-id (or a broadcast's apns-request-id),
// apns-topic and apns-collapse-id; empty ones are not sent, and pass.
func checkHeaderFields(id, topic, collapseID string) error {
	switch {
	case id != "" && !isUUID(id):
		return ErrInvalidID
	case hasControl(topic):
		return ErrInvalidTopic
	case hasControl(collapseID):
		return ErrInvalidCollapseID
	}
	return nil
}

var jsonNull = []byte("null")

// isNullPayload reports whether a payload is the JSON null (what a nil map or a nil pointer
// marshals to): no payload at all.
func isNullPayload(body []byte) bool {
	return bytes.Equal(bytes.TrimSpace(body), jsonNull)
}
