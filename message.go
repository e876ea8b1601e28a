package apns

// This file owns Message: validation of Send's arguments and the command-2 frame encoding.

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"
)

// Sizes of the binary protocol.
const (
	// TokenSize is the size of a binary device token.
	TokenSize = 32
	// MaxPayloadSize is the largest payload a command-2 frame may carry.
	MaxPayloadSize = 2048
)

// Frame layout (PROTOCOL.md §1.4). The client writes the five items in Apple's order:
//
//	0x02 | frame length u32 |
//	1 | 32 | token | 2 | n | payload | 3 | 4 | id | 4 | 4 | expiry | 5 | 1 | priority
const (
	frameCommand  = 2
	frameHeader   = 5                     // command byte and length
	itemHeader    = 3                     // item id and length
	frameTail     = 3 + 4 + 3 + 4 + 3 + 1 // identifier, expiry and priority items
	frameOverhead = frameHeader + itemHeader + TokenSize + itemHeader + frameTail
	idOffsetEnd   = frameTail - itemHeader // the identifier starts this many bytes before the end
	maxFrameSize  = frameOverhead + MaxPayloadSize
)

// Item identifiers of a command-2 frame.
const (
	itemToken    = 1
	itemPayload  = 2
	itemID       = 3
	itemExpiry   = 4
	itemPriority = 5
)

// itemSizes gives the fixed data length of each item; -1 marks the variable-length payload.
var itemSizes = [...]int{itemToken: TokenSize, itemPayload: -1, itemID: 4, itemExpiry: 4, itemPriority: 1}

// Message is one notification as it goes on the wire. The callback receives the Message that
// was rejected; MessageID is the identifier it carried on its last connection.
type Message struct {
	Token     []byte // binary device token, 32 bytes
	MessageID uint32 // identifier assigned by the worker that wrote it
	Expiry    uint32 // UNIX seconds; 0 means deliver once and do not store
	Priority  uint8  // PRIORITY_IMMEDIATE or PRIORITY_DELAYED
	Payload   []byte // JSON payload
}

// frameBuf carries one encoded frame from Send to a worker. Buffers are pooled: Send encodes
// into one, the worker copies the frame into its in-flight ring and releases the buffer, so
// the frame costs no allocation of its own.
type frameBuf struct {
	b   []byte
	enc *json.Encoder // writes the payload straight into b
}

var framePool = sync.Pool{New: func() any { return new(frameBuf) }}

func getFrameBuf() *frameBuf { return framePool.Get().(*frameBuf) }

// release returns f to the pool; f must not be used afterwards.
func (f *frameBuf) release() {
	f.b = f.b[:0]
	framePool.Put(f)
}

// Write appends p to the frame; it is the json.Encoder's destination.
func (f *frameBuf) Write(p []byte) (int, error) {
	f.b = append(f.b, p...)
	return len(p), nil
}

// payloadOffset is where the payload starts in a frame.
const payloadOffset = frameHeader + itemHeader + TokenSize + itemHeader

// encode validates Send's arguments and encodes the command-2 frame into f.b, with
// identifier 0. The worker patches the identifier in place with setFrameID when it writes the
// frame.
func (f *frameBuf) encode(token string, expiry time.Time, priority uint8, payload map[string]interface{}) error {
	if len(token) != 2*TokenSize {
		if _, err := hex.DecodeString(token); err != nil && !errors.Is(err, hex.ErrLength) {
			return ErrTokenNotHex
		}
		return ErrTokenLength
	}
	if priority != PRIORITY_IMMEDIATE && priority != PRIORITY_DELAYED {
		return invalidPriority(int(priority), "the binary protocol takes 10 (immediate) or 5 (power-saving)")
	}
	exp, err := expirySeconds(expiry)
	if err != nil {
		return err
	}
	if payload == nil {
		return ErrPayloadEmpty
	}
	f.b = slices.Grow(f.b[:0], frameOverhead+256)[:payloadOffset]
	if !decodeHex(f.b[frameHeader+itemHeader:frameHeader+itemHeader+TokenSize], token) {
		return ErrTokenNotHex
	}
	if f.enc == nil {
		f.enc = json.NewEncoder(f)
	}
	if err := f.enc.Encode(payload); err != nil { // the same bytes as json.Marshal, and a newline
		return fmt.Errorf("%w: %v", ErrPayloadMarshal, err)
	}
	n := len(f.b) - 1 - payloadOffset
	if n > MaxPayloadSize {
		return payloadTooLarge(n, MaxPayloadSize, "the binary protocol allows")
	}
	if priority == PRIORITY_IMMEDIATE && inferPushType(f.b[payloadOffset:payloadOffset+n]) == "background" {
		priority = PRIORITY_DELAYED // APNs forbids 10 for a push with only content-available
	}
	f.b = append(f.b[:payloadOffset+n], make([]byte, frameTail)...)
	putFrame(f.b, n, 0, exp, priority)
	return nil
}

// decodeHex decodes the hex string s into dst, which is len(s)/2 bytes long, without
// allocating; it reports whether s was valid.
func decodeHex(dst []byte, s string) bool {
	bad := byte(0)
	for i := range dst {
		hi, lo := hexValue[s[2*i]], hexValue[s[2*i+1]]
		bad |= hi | lo
		dst[i] = hi<<4 | lo&0xf
	}
	return bad&0x10 == 0
}

// hexValue maps a hex digit to its value and any other byte to 0x10.
var hexValue = func() (t [256]byte) {
	for i := range t {
		switch c := byte(i); {
		case '0' <= c && c <= '9':
			t[i] = c - '0'
		case 'a' <= c && c <= 'f':
			t[i] = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			t[i] = c - 'A' + 10
		default:
			t[i] = 0x10
		}
	}
	return t
}()

// expirySeconds converts Send's expiry to the frame's 32-bit UNIX time; the zero Time is 0.
func expirySeconds(t time.Time) (uint32, error) {
	if t.IsZero() {
		return 0, nil
	}
	s := t.Unix()
	if s < 0 || s > math.MaxUint32 {
		return 0, ErrInvalidExpiry
	}
	return uint32(s), nil
}

// putFrame fills frame, whose length is frameOverhead+n and whose token and n payload bytes
// are already in place, with every other field.
func putFrame(frame []byte, n int, id, expiry uint32, priority uint8) {
	be := binary.BigEndian
	frame[0] = frameCommand
	be.PutUint32(frame[1:], uint32(len(frame)-frameHeader))
	b := frame[frameHeader:]
	b[0] = itemToken
	be.PutUint16(b[1:], TokenSize)
	b = b[itemHeader+TokenSize:]
	b[0] = itemPayload
	be.PutUint16(b[1:], uint16(n))
	b = b[itemHeader+n:]
	b[0] = itemID
	be.PutUint16(b[1:], 4)
	be.PutUint32(b[3:], id)
	b[7] = itemExpiry
	be.PutUint16(b[8:], 4)
	be.PutUint32(b[10:], expiry)
	b[14] = itemPriority
	be.PutUint16(b[15:], 1)
	b[17] = priority
}

// setFrameID writes the identifier into a frame made by encodeFrame.
func setFrameID(frame []byte, id uint32) {
	binary.BigEndian.PutUint32(frame[len(frame)-idOffsetEnd:], id)
}

// frameID reads the identifier of a frame made by encodeFrame.
func frameID(frame []byte) uint32 {
	return binary.BigEndian.Uint32(frame[len(frame)-idOffsetEnd:])
}

// MarshalBinary encodes m as a command-2 frame with all five items. The token must be
// TokenSize bytes and the payload at most MaxPayloadSize bytes.
func (m *Message) MarshalBinary() ([]byte, error) {
	if len(m.Token) != TokenSize {
		return nil, ErrTokenLength
	}
	if len(m.Payload) > MaxPayloadSize {
		return nil, payloadTooLarge(len(m.Payload), MaxPayloadSize, "a binary frame allows")
	}
	frame := make([]byte, frameOverhead+len(m.Payload))
	copy(frame[frameHeader+itemHeader:], m.Token)
	copy(frame[payloadOffset:], m.Payload)
	putFrame(frame, len(m.Payload), m.MessageID, m.Expiry, m.Priority)
	return frame, nil
}

// ErrMalformedFrame is returned by UnmarshalBinary for bytes that are not one command-2 frame.
var ErrMalformedFrame = errors.New("apns: malformed frame")

// UnmarshalBinary decodes one command-2 frame, with its items in any order, into m. It accepts
// only frames that MarshalBinary could have produced: every item present once, with its
// documented length. Token and Payload are copies.
func (m *Message) UnmarshalBinary(b []byte) error {
	be := binary.BigEndian
	if len(b) < frameHeader || b[0] != frameCommand || int(be.Uint32(b[1:])) != len(b)-frameHeader {
		return ErrMalformedFrame
	}
	var msg Message
	var seen [itemPriority + 1]bool
	for b = b[frameHeader:]; len(b) > 0; {
		if len(b) < itemHeader {
			return ErrMalformedFrame
		}
		id, n := b[0], int(be.Uint16(b[1:]))
		if id < itemToken || id > itemPriority || seen[id] || len(b) < itemHeader+n {
			return ErrMalformedFrame
		}
		seen[id] = true
		data := b[itemHeader : itemHeader+n]
		b = b[itemHeader+n:]
		if want := itemSizes[id]; want >= 0 && n != want || want < 0 && n > MaxPayloadSize {
			return ErrMalformedFrame
		}
		switch id {
		case itemToken:
			msg.Token = append([]byte(nil), data...)
		case itemPayload:
			msg.Payload = append([]byte(nil), data...)
		case itemID:
			msg.MessageID = be.Uint32(data)
		case itemExpiry:
			msg.Expiry = be.Uint32(data)
		case itemPriority:
			msg.Priority = data[0]
		}
	}
	for _, ok := range seen[itemToken:] {
		if !ok {
			return ErrMalformedFrame
		}
	}
	*m = msg
	return nil
}

// messageOf decodes a frame made by encodeFrame for the callback.
func messageOf(frame []byte) *Message {
	m := new(Message)
	if err := m.UnmarshalBinary(frame); err != nil {
		panic("apns: internal frame is malformed: " + err.Error())
	}
	return m
}
