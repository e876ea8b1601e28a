package apns

// This file owns Payload, a builder for the JSON payload of a notification: the aps dictionary
// with Apple's keys (PROTOCOL.md §6) and the custom keys beside it.

import (
	"encoding/json"
	"time"
)

// InterruptionLevel is the value of the aps key interruption-level (iOS 15+): how strongly a
// notification may interrupt the user.
type InterruptionLevel string

// Interruption levels Apple documents.
const (
	// InterruptionPassive adds the notification to the list without lighting the screen or
	// playing a sound.
	InterruptionPassive InterruptionLevel = "passive"
	// InterruptionActive presents the notification at once, lighting the screen and possibly
	// playing a sound. It is the system's default.
	InterruptionActive InterruptionLevel = "active"
	// InterruptionTimeSensitive presents the notification at once and may break through Focus.
	InterruptionTimeSensitive InterruptionLevel = "time-sensitive"
	// InterruptionCritical presents the notification at once, plays a sound and bypasses the
	// mute switch and Focus. It needs Apple's critical-alert entitlement.
	InterruptionCritical InterruptionLevel = "critical"
)

// LiveActivityEvent is the value of the aps key event: what a Live Activity push does.
type LiveActivityEvent string

// Live Activity events Apple documents.
const (
	// LiveActivityStart starts a Live Activity (push-to-start). A start payload also needs an
	// alert, AttributesType, Attributes, Timestamp and ContentState.
	LiveActivityStart LiveActivityEvent = "start"
	// LiveActivityUpdate updates the content state of a running Live Activity.
	LiveActivityUpdate LiveActivityEvent = "update"
	// LiveActivityEnd ends a Live Activity; DismissalDate says when it leaves the screen.
	LiveActivityEnd LiveActivityEvent = "end"
)

// Payload builds the JSON payload of a notification: the aps dictionary, with the keys Apple
// defines, and custom keys beside it. Each setter stores one key and returns the Payload, so
// calls chain:
//
//	p := apns.NewPayload().AlertTitle("Game request").AlertBody("Bob wants to play").Badge(5)
//	err := client.Send(token, expiry, apns.PRIORITY_IMMEDIATE, p.Map())
//
// A key appears in the payload only once a setter has stored it; a later call to the same
// setter replaces the value. The builder does not check values against Apple's limits (APNs
// ignores what it does not understand); Send and the HTTP/2 API check only that the payload
// marshals and fits the size limit. A Payload with no key set encodes as {"aps":{}}.
//
// Map returns a new map for Client.Send, and a *Payload can be the Payload of a Notification,
// which marshals it through MarshalJSON when it is sent. Either way the payload is captured
// when Send, SendNotification or Push is called; changing the builder afterwards changes only
// later notifications.
//
// The zero Payload is empty and ready to use. A Payload must not be changed concurrently with
// any other use; Map and MarshalJSON alone may run concurrently.
type Payload struct {
	aps       map[string]interface{} // aps keys other than alert and sound, by JSON name
	alert     map[string]interface{} // keys of the alert dictionary; body when set by Alert
	alertDict bool                   // an Alert… setter other than Alert was called
	sound     sound
	custom    map[string]interface{} // keys beside aps
}

// sound is the aps key sound: a name, or the critical-alert dictionary.
type sound struct {
	set, critical bool
	name          string
	volume        float64
}

// NewPayload returns an empty Payload. It is the same as new(Payload).
func NewPayload() *Payload { return new(Payload) }

func (p *Payload) setAPS(key string, v interface{}) *Payload {
	if p.aps == nil {
		p.aps = make(map[string]interface{})
	}
	p.aps[key] = v
	return p
}

// setAlert stores a key of the alert dictionary and makes the alert a dictionary.
func (p *Payload) setAlert(key string, v interface{}) *Payload {
	if p.alert == nil {
		p.alert = make(map[string]interface{})
	}
	p.alert[key] = v
	p.alertDict = true
	return p
}

// setLoc stores a localization key and its arguments; the arguments key is removed when args
// is empty.
func (p *Payload) setLoc(keyName, argsName, key string, args []string) *Payload {
	p.setAlert(keyName, key)
	if len(args) == 0 {
		delete(p.alert, argsName)
	} else {
		p.alert[argsName] = append([]string(nil), args...)
	}
	return p
}

// Alert sets the alert's body text (the aps key alert). As long as the body is the only alert
// content and no other Alert… method has been called, the alert is encoded as a plain string,
// "alert":"body". Any other Alert… method, before or after, makes it the alert dictionary and
// keeps the body there as "body". Alert and AlertBody set the same text: the later call wins.
func (p *Payload) Alert(body string) *Payload {
	if p.alert == nil {
		p.alert = make(map[string]interface{})
	}
	p.alert["body"] = body
	return p
}

// AlertBody sets the alert dictionary's body, the message text. Unlike Alert it always makes
// the alert a dictionary.
func (p *Payload) AlertBody(body string) *Payload { return p.setAlert("body", body) }

// AlertTitle sets the alert dictionary's title, shown above the body and in the Apple Watch
// short look.
func (p *Payload) AlertTitle(title string) *Payload { return p.setAlert("title", title) }

// AlertSubtitle sets the alert dictionary's subtitle, shown between title and body.
func (p *Payload) AlertSubtitle(subtitle string) *Payload {
	return p.setAlert("subtitle", subtitle)
}

// AlertLaunchImage sets the alert dictionary's launch-image: the launch image or storyboard
// to show when the user opens the app from the notification.
func (p *Payload) AlertLaunchImage(name string) *Payload {
	return p.setAlert("launch-image", name)
}

// AlertTitleLocKey sets the alert dictionary's title-loc-key, the app's Localizable.strings
// key for the title, and title-loc-args, the values for its %@ placeholders. Each call
// replaces both; title-loc-args is left out when args is empty.
func (p *Payload) AlertTitleLocKey(key string, args ...string) *Payload {
	return p.setLoc("title-loc-key", "title-loc-args", key, args)
}

// AlertSubtitleLocKey sets the alert dictionary's subtitle-loc-key and subtitle-loc-args, for
// the subtitle, like AlertTitleLocKey.
func (p *Payload) AlertSubtitleLocKey(key string, args ...string) *Payload {
	return p.setLoc("subtitle-loc-key", "subtitle-loc-args", key, args)
}

// AlertLocKey sets the alert dictionary's loc-key and loc-args, for the body, like
// AlertTitleLocKey.
func (p *Payload) AlertLocKey(key string, args ...string) *Payload {
	return p.setLoc("loc-key", "loc-args", key, args)
}

// AlertAction sets the alert dictionary's action, the label of the action button. It is a
// legacy key, absent from Apple's current documentation.
func (p *Payload) AlertAction(label string) *Payload { return p.setAlert("action", label) }

// AlertActionLocKey sets the alert dictionary's action-loc-key, the Localizable.strings key
// for the action button's label. It is a legacy key, absent from Apple's current
// documentation.
func (p *Payload) AlertActionLocKey(key string) *Payload {
	return p.setAlert("action-loc-key", key)
}

// AlertSummaryArg sets the alert dictionary's summary-arg, the text of a notification group's
// summary (iOS 12). It is a legacy key, absent from Apple's current documentation.
func (p *Payload) AlertSummaryArg(arg string) *Payload { return p.setAlert("summary-arg", arg) }

// AlertSummaryArgCount sets the alert dictionary's summary-arg-count, how many items this
// notification adds to its group's summary (iOS 12). It is a legacy key, absent from Apple's
// current documentation.
func (p *Payload) AlertSummaryArgCount(n int) *Payload {
	return p.setAlert("summary-arg-count", n)
}

// Badge sets the number on the app icon (the aps key badge). Badge(0) clears the badge;
// without a call the badge is left as it is.
func (p *Payload) Badge(n int) *Payload { return p.setAPS("badge", n) }

// Sound sets the aps key sound to the name of a sound file in the app bundle or its
// Library/Sounds folder, or "default" for the system sound. It replaces a CriticalSound.
func (p *Payload) Sound(name string) *Payload {
	p.sound = sound{set: true, name: name}
	return p
}

// CriticalSound sets the aps key sound to the critical-alert dictionary: critical 1, the sound
// name (a file as for Sound, or "default") and the volume, from 0 (silent) to 1 (full), which
// is not checked. Critical alerts need Apple's entitlement; see also InterruptionCritical. It
// replaces a Sound.
func (p *Payload) CriticalSound(name string, volume float64) *Payload {
	p.sound = sound{set: true, critical: true, name: name, volume: volume}
	return p
}

// ThreadID sets the aps key thread-id, which groups notifications (threadIdentifier).
func (p *Payload) ThreadID(id string) *Payload { return p.setAPS("thread-id", id) }

// Category sets the aps key category, the identifier of one of the app's registered
// notification categories, whose actions the notification offers.
func (p *Payload) Category(name string) *Payload { return p.setAPS("category", name) }

// ContentAvailable sets the aps key content-available to 1: the app is woken in the background
// to fetch new content. A silent push has this key alone in aps, no alert, badge or sound, and
// goes with push type background and priority 5 (PRIORITY_DELAYED).
func (p *Payload) ContentAvailable() *Payload { return p.setAPS("content-available", 1) }

// MutableContent sets the aps key mutable-content to 1: the notification goes through the
// app's notification service extension, which may change it, before it is shown.
func (p *Payload) MutableContent() *Payload { return p.setAPS("mutable-content", 1) }

// TargetContentID sets the aps key target-content-id, the identifier of the app window to
// bring forward when the notification is opened (targetContentIdentifier).
func (p *Payload) TargetContentID(id string) *Payload {
	return p.setAPS("target-content-id", id)
}

// InterruptionLevel sets the aps key interruption-level (iOS 15+) to one of the Interruption…
// constants.
func (p *Payload) InterruptionLevel(l InterruptionLevel) *Payload {
	return p.setAPS("interruption-level", string(l))
}

// RelevanceScore sets the aps key relevance-score, which orders notifications in the
// notification summary: from 0 to 1 for ordinary notifications; any value for Live
// Activities, where the highest gets the Dynamic Island. It must be finite for the payload to
// marshal.
func (p *Payload) RelevanceScore(score float64) *Payload {
	return p.setAPS("relevance-score", score)
}

// FilterCriteria sets the aps key filter-criteria, which the app's Focus filter
// (SetFocusFilterIntent) matches to decide whether the notification is shown.
func (p *Payload) FilterCriteria(criteria string) *Payload {
	return p.setAPS("filter-criteria", criteria)
}

// URLArgs sets the aps key url-args of Safari web push: the values for the placeholders of
// the website's URL format string. With no arguments it is an empty array.
func (p *Payload) URLArgs(args ...string) *Payload {
	return p.setAPS("url-args", append([]string{}, args...))
}

// Event sets the aps key event of a Live Activity push to one of the LiveActivity… constants.
// Live Activity pushes go with push type liveactivity (Notification.PushType) and the topic
// <bundle ID>.push-type.liveactivity.
func (p *Payload) Event(e LiveActivityEvent) *Payload { return p.setAPS("event", string(e)) }

// Timestamp sets the aps key timestamp of a Live Activity push, in UNIX seconds: when this
// update was made. The device keeps the newest update.
func (p *Payload) Timestamp(t time.Time) *Payload { return p.setAPS("timestamp", t.Unix()) }

// ContentState sets the aps key content-state of a Live Activity push: the activity's dynamic
// state, which must marshal to a JSON object matching the app's
// ActivityAttributes.ContentState with default coding. It is stored as given, not copied.
func (p *Payload) ContentState(state interface{}) *Payload {
	return p.setAPS("content-state", state)
}

// StaleDate sets the aps key stale-date of a Live Activity push, in UNIX seconds: when the
// activity's content becomes outdated.
func (p *Payload) StaleDate(t time.Time) *Payload { return p.setAPS("stale-date", t.Unix()) }

// DismissalDate sets the aps key dismissal-date of a Live Activity end push, in UNIX seconds:
// when the ended activity leaves the Lock Screen. A time in the past removes it at once;
// without it the system may keep it for up to four hours.
func (p *Payload) DismissalDate(t time.Time) *Payload {
	return p.setAPS("dismissal-date", t.Unix())
}

// AttributesType sets the aps key attributes-type of a Live Activity start push: the name of
// the app's ActivityAttributes type.
func (p *Payload) AttributesType(name string) *Payload {
	return p.setAPS("attributes-type", name)
}

// Attributes sets the aps key attributes of a Live Activity start push: the activity's static
// attributes, which must marshal to a JSON object. It is stored as given, not copied.
func (p *Payload) Attributes(attrs interface{}) *Payload { return p.setAPS("attributes", attrs) }

// InputPushChannel sets the aps key input-push-channel of a Live Activity start push (iOS
// 18+): the broadcast channel the new activity subscribes to.
func (p *Payload) InputPushChannel(channelID string) *Payload {
	return p.setAPS("input-push-channel", channelID)
}

// InputPushToken sets the aps key input-push-token of a Live Activity start push (iOS 18+) to
// 1: the new activity asks for its own update token.
func (p *Payload) InputPushToken() *Payload { return p.setAPS("input-push-token", 1) }

// Custom sets a key beside aps to v, which must marshal to JSON; Apple asks for dictionaries,
// arrays, strings, numbers and booleans. v is stored as given, not copied. Custom panics if
// key is "aps": Apple's keys have their own setters, and Map's result may be extended with
// keys the builder lacks.
func (p *Payload) Custom(key string, v interface{}) *Payload {
	if key == "aps" {
		panic(`apns: Payload.Custom key "aps" is reserved`)
	}
	if p.custom == nil {
		p.custom = make(map[string]interface{})
	}
	p.custom[key] = v
	return p
}

// Map returns the payload in the form Client.Send takes: a new map holding "aps", itself a new
// map[string]interface{}, and the custom keys. The maps and string slices the builder made are
// new on every call, so the result and the builder can change independently; values given to
// Custom, ContentState and Attributes are shared. A key missing from the builder, such as one
// Apple adds later, can be added to the result's "aps" map.
func (p *Payload) Map() map[string]interface{} {
	aps := make(map[string]interface{}, len(p.aps)+2)
	for k, v := range p.aps {
		if s, ok := v.([]string); ok { // url-args
			v = append([]string{}, s...)
		}
		aps[k] = v
	}
	switch {
	case len(p.alert) == 0:
	case !p.alertDict:
		aps["alert"] = p.alert["body"]
	default:
		alert := make(map[string]interface{}, len(p.alert))
		for k, v := range p.alert {
			if s, ok := v.([]string); ok { // …-loc-args
				v = append([]string(nil), s...)
			}
			alert[k] = v
		}
		aps["alert"] = alert
	}
	switch s := p.sound; {
	case !s.set:
	case s.critical:
		aps["sound"] = map[string]interface{}{"critical": 1, "name": s.name, "volume": s.volume}
	default:
		aps["sound"] = s.name
	}
	m := make(map[string]interface{}, len(p.custom)+1)
	for k, v := range p.custom {
		m[k] = v
	}
	m["aps"] = aps
	return m
}

// MarshalJSON encodes the payload as JSON, the encoding of Map: object keys are sorted. It
// fails only for a value that does not marshal (a custom value, content state or attributes
// of an unsupported type, or a non-finite number).
func (p *Payload) MarshalJSON() ([]byte, error) { return json.Marshal(p.Map()) }

var _ json.Marshaler = (*Payload)(nil)
