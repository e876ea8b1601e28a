package apns_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
)

// A simple alert with a title, a badge, a sound and a custom key beside aps.
func ExamplePayload() {
	p := apns.NewPayload().
		Alert("Bob wants to play poker").
		AlertTitle("Game Request"). // the alert becomes a dictionary; the body stays
		Badge(5).
		Sound("bingbong.aiff").
		Category("GAME_INVITATION").
		InterruptionLevel(apns.InterruptionTimeSensitive).
		Custom("gameID", "12345678")
	b, err := json.Marshal(p) // client.Send takes p.Map()
	if err != nil {
		panic(err)
	}
	fmt.Println(string(b))
	// Output:
	// {"aps":{"alert":{"body":"Bob wants to play poker","title":"Game Request"},"badge":5,"category":"GAME_INVITATION","interruption-level":"time-sensitive","sound":"bingbong.aiff"},"gameID":"12345678"}
}

// A Live Activity push-to-start payload; it goes with push type liveactivity.
func ExamplePayload_liveActivity() {
	now := time.Unix(1767225600, 0)
	p := apns.NewPayload().
		Event(apns.LiveActivityStart).
		Timestamp(now).
		AttributesType("DeliveryAttributes").
		Attributes(map[string]interface{}{"orderID": "A17"}).
		ContentState(map[string]interface{}{"minutesLeft": 20}).
		StaleDate(now.Add(time.Hour)).
		AlertTitle("Order A17").
		AlertBody("Your order is on its way")
	b, err := p.MarshalJSON()
	if err != nil {
		panic(err)
	}
	fmt.Println(string(b))
	// Output:
	// {"aps":{"alert":{"body":"Your order is on its way","title":"Order A17"},"attributes":{"orderID":"A17"},"attributes-type":"DeliveryAttributes","content-state":{"minutesLeft":20},"event":"start","stale-date":1767229200,"timestamp":1767225600}}
}

// sameJSON reports whether two JSON texts decode to equal values, whatever their key order.
func sameJSON(t *testing.T, got, want []byte) bool {
	t.Helper()
	var g, w interface{}
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("got invalid JSON %s: %v", got, err)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatalf("want is invalid JSON %s: %v", want, err)
	}
	return reflect.DeepEqual(g, w)
}

func TestPayloadEncodesEveryKeyAsHandWritten(t *testing.T) {
	ts := time.Unix(1700000000, 0)
	type state struct {
		Score int    `json:"score"`
		Team  string `json:"team"`
	}
	cases := []struct {
		name string
		p    *apns.Payload
		want string
	}{
		{"empty", apns.NewPayload(), `{"aps":{}}`},
		{"zero value", new(apns.Payload), `{"aps":{}}`},

		// alert
		{"alert string", apns.NewPayload().Alert("hi"), `{"aps":{"alert":"hi"}}`},
		{"alert empty string", apns.NewPayload().Alert(""), `{"aps":{"alert":""}}`},
		{"title", apns.NewPayload().AlertTitle("T"), `{"aps":{"alert":{"title":"T"}}}`},
		{"subtitle", apns.NewPayload().AlertSubtitle("S"), `{"aps":{"alert":{"subtitle":"S"}}}`},
		{"body", apns.NewPayload().AlertBody("B"), `{"aps":{"alert":{"body":"B"}}}`},
		{"launch-image", apns.NewPayload().AlertLaunchImage("L.png"), `{"aps":{"alert":{"launch-image":"L.png"}}}`},
		{"title-loc-key and args", apns.NewPayload().AlertTitleLocKey("TK", "a", "b"),
			`{"aps":{"alert":{"title-loc-key":"TK","title-loc-args":["a","b"]}}}`},
		{"title-loc-key alone", apns.NewPayload().AlertTitleLocKey("TK"), `{"aps":{"alert":{"title-loc-key":"TK"}}}`},
		{"subtitle-loc-key and args", apns.NewPayload().AlertSubtitleLocKey("SK", "x"),
			`{"aps":{"alert":{"subtitle-loc-key":"SK","subtitle-loc-args":["x"]}}}`},
		{"subtitle-loc-key alone", apns.NewPayload().AlertSubtitleLocKey("SK"), `{"aps":{"alert":{"subtitle-loc-key":"SK"}}}`},
		{"loc-key and args", apns.NewPayload().AlertLocKey("K", "1", "2", "3"),
			`{"aps":{"alert":{"loc-key":"K","loc-args":["1","2","3"]}}}`},
		{"loc-key alone", apns.NewPayload().AlertLocKey("K"), `{"aps":{"alert":{"loc-key":"K"}}}`},
		{"action", apns.NewPayload().AlertAction("Open"), `{"aps":{"alert":{"action":"Open"}}}`},
		{"action-loc-key", apns.NewPayload().AlertActionLocKey("PLAY"), `{"aps":{"alert":{"action-loc-key":"PLAY"}}}`},
		{"summary-arg", apns.NewPayload().AlertSummaryArg("Bob"), `{"aps":{"alert":{"summary-arg":"Bob"}}}`},
		{"summary-arg-count", apns.NewPayload().AlertSummaryArgCount(3), `{"aps":{"alert":{"summary-arg-count":3}}}`},
		{"full alert dictionary", apns.NewPayload().AlertTitle("T").AlertSubtitle("S").AlertBody("B").
			AlertLaunchImage("L").AlertTitleLocKey("TK", "t").AlertSubtitleLocKey("SK", "s").AlertLocKey("K", "b"),
			`{"aps":{"alert":{"title":"T","subtitle":"S","body":"B","launch-image":"L","title-loc-key":"TK",
			"title-loc-args":["t"],"subtitle-loc-key":"SK","subtitle-loc-args":["s"],"loc-key":"K","loc-args":["b"]}}}`},

		// badge and sound
		{"badge", apns.NewPayload().Badge(7), `{"aps":{"badge":7}}`},
		{"badge 0 clears", apns.NewPayload().Badge(0), `{"aps":{"badge":0}}`},
		{"sound", apns.NewPayload().Sound("default"), `{"aps":{"sound":"default"}}`},
		{"critical sound", apns.NewPayload().CriticalSound("alarm.caf", 0.75),
			`{"aps":{"sound":{"critical":1,"name":"alarm.caf","volume":0.75}}}`},
		{"critical sound silent", apns.NewPayload().CriticalSound("default", 0),
			`{"aps":{"sound":{"critical":1,"name":"default","volume":0}}}`},

		// other aps keys
		{"thread-id", apns.NewPayload().ThreadID("chat-1"), `{"aps":{"thread-id":"chat-1"}}`},
		{"category", apns.NewPayload().Category("INVITE"), `{"aps":{"category":"INVITE"}}`},
		{"content-available", apns.NewPayload().ContentAvailable(), `{"aps":{"content-available":1}}`},
		{"mutable-content", apns.NewPayload().MutableContent(), `{"aps":{"mutable-content":1}}`},
		{"target-content-id", apns.NewPayload().TargetContentID("w1"), `{"aps":{"target-content-id":"w1"}}`},
		{"interruption-level passive", apns.NewPayload().InterruptionLevel(apns.InterruptionPassive),
			`{"aps":{"interruption-level":"passive"}}`},
		{"interruption-level active", apns.NewPayload().InterruptionLevel(apns.InterruptionActive),
			`{"aps":{"interruption-level":"active"}}`},
		{"interruption-level time-sensitive", apns.NewPayload().InterruptionLevel(apns.InterruptionTimeSensitive),
			`{"aps":{"interruption-level":"time-sensitive"}}`},
		{"interruption-level critical", apns.NewPayload().InterruptionLevel(apns.InterruptionCritical),
			`{"aps":{"interruption-level":"critical"}}`},
		{"relevance-score", apns.NewPayload().RelevanceScore(0.25), `{"aps":{"relevance-score":0.25}}`},
		{"relevance-score of a Live Activity", apns.NewPayload().RelevanceScore(100), `{"aps":{"relevance-score":100}}`},
		{"filter-criteria", apns.NewPayload().FilterCriteria("work"), `{"aps":{"filter-criteria":"work"}}`},
		{"url-args", apns.NewPayload().URLArgs("boarding", "A998"), `{"aps":{"url-args":["boarding","A998"]}}`},
		{"url-args empty", apns.NewPayload().URLArgs(), `{"aps":{"url-args":[]}}`},

		// Live Activity keys
		{"event start", apns.NewPayload().Event(apns.LiveActivityStart), `{"aps":{"event":"start"}}`},
		{"event update", apns.NewPayload().Event(apns.LiveActivityUpdate), `{"aps":{"event":"update"}}`},
		{"event end", apns.NewPayload().Event(apns.LiveActivityEnd), `{"aps":{"event":"end"}}`},
		{"timestamp", apns.NewPayload().Timestamp(ts), `{"aps":{"timestamp":1700000000}}`},
		{"content-state map", apns.NewPayload().ContentState(map[string]interface{}{"score": 2}),
			`{"aps":{"content-state":{"score":2}}}`},
		{"content-state struct", apns.NewPayload().ContentState(state{Score: 3, Team: "A"}),
			`{"aps":{"content-state":{"score":3,"team":"A"}}}`},
		{"stale-date", apns.NewPayload().StaleDate(ts.Add(time.Minute)), `{"aps":{"stale-date":1700000060}}`},
		{"dismissal-date", apns.NewPayload().DismissalDate(ts.Add(-time.Hour)), `{"aps":{"dismissal-date":1699996400}}`},
		{"attributes-type", apns.NewPayload().AttributesType("MatchAttributes"), `{"aps":{"attributes-type":"MatchAttributes"}}`},
		{"attributes", apns.NewPayload().Attributes(map[string]string{"home": "A", "away": "B"}),
			`{"aps":{"attributes":{"home":"A","away":"B"}}}`},
		{"input-push-channel", apns.NewPayload().InputPushChannel("dHN0LXNyY2gtY2hubA=="),
			`{"aps":{"input-push-channel":"dHN0LXNyY2gtY2hubA=="}}`},
		{"input-push-token", apns.NewPayload().InputPushToken(), `{"aps":{"input-push-token":1}}`},
		{"Live Activity start", apns.NewPayload().Event(apns.LiveActivityStart).Timestamp(ts).
			AttributesType("MatchAttributes").Attributes(map[string]string{"home": "A"}).
			ContentState(state{Score: 0, Team: "A"}).AlertTitle("Kick-off").AlertBody("A vs B").
			InputPushToken().RelevanceScore(50),
			`{"aps":{"event":"start","timestamp":1700000000,"attributes-type":"MatchAttributes",
			"attributes":{"home":"A"},"content-state":{"score":0,"team":"A"},
			"alert":{"title":"Kick-off","body":"A vs B"},"input-push-token":1,"relevance-score":50}}`},
		{"Live Activity end", apns.NewPayload().Event(apns.LiveActivityEnd).Timestamp(ts).
			ContentState(state{Score: 3}).DismissalDate(ts),
			`{"aps":{"event":"end","timestamp":1700000000,"content-state":{"score":3,"team":""},"dismissal-date":1700000000}}`},

		// custom keys
		{"custom keys beside aps", apns.NewPayload().Alert("hi").Custom("id", 42).Custom("s", "x").
			Custom("ok", true).Custom("obj", map[string]int{"a": 1}).Custom("list", []int{1, 2}),
			`{"aps":{"alert":"hi"},"id":42,"s":"x","ok":true,"obj":{"a":1},"list":[1,2]}`},
		{"custom only", apns.NewPayload().Custom("data", "x"), `{"aps":{},"data":"x"}`},

		// conflicting calls
		{"Alert then AlertTitle makes a dictionary with the body", apns.NewPayload().Alert("b").AlertTitle("t"),
			`{"aps":{"alert":{"title":"t","body":"b"}}}`},
		{"AlertTitle then Alert keeps the dictionary", apns.NewPayload().AlertTitle("t").Alert("b"),
			`{"aps":{"alert":{"title":"t","body":"b"}}}`},
		{"Alert then AlertLocKey", apns.NewPayload().Alert("b").AlertLocKey("K", "1"),
			`{"aps":{"alert":{"body":"b","loc-key":"K","loc-args":["1"]}}}`},
		{"AlertBody then Alert: the later body, still a dictionary", apns.NewPayload().AlertBody("1").Alert("2"),
			`{"aps":{"alert":{"body":"2"}}}`},
		{"Alert then AlertBody: the later body as a dictionary", apns.NewPayload().Alert("1").AlertBody("2"),
			`{"aps":{"alert":{"body":"2"}}}`},
		{"Alert twice: the later string", apns.NewPayload().Alert("1").Alert("2"), `{"aps":{"alert":"2"}}`},
		{"AlertLocKey without args drops the earlier args", apns.NewPayload().AlertLocKey("K", "1").AlertLocKey("K2"),
			`{"aps":{"alert":{"loc-key":"K2"}}}`},
		{"AlertTitleLocKey replaces its args", apns.NewPayload().AlertTitleLocKey("K", "1", "2").AlertTitleLocKey("K", "3"),
			`{"aps":{"alert":{"title-loc-key":"K","title-loc-args":["3"]}}}`},
		{"Sound then CriticalSound", apns.NewPayload().Sound("a").CriticalSound("b", 1),
			`{"aps":{"sound":{"critical":1,"name":"b","volume":1}}}`},
		{"CriticalSound then Sound", apns.NewPayload().CriticalSound("b", 1).Sound("a"), `{"aps":{"sound":"a"}}`},
		{"Badge then Badge(0)", apns.NewPayload().Badge(3).Badge(0), `{"aps":{"badge":0}}`},
		{"Custom twice: the later value", apns.NewPayload().Custom("k", 1).Custom("k", "two"), `{"aps":{},"k":"two"}`},
		{"InterruptionLevel twice", apns.NewPayload().InterruptionLevel(apns.InterruptionCritical).
			InterruptionLevel(apns.InterruptionPassive), `{"aps":{"interruption-level":"passive"}}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.p.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			if !sameJSON(t, got, []byte(tc.want)) {
				t.Errorf("got %s; want %s", got, tc.want)
			}
			viaMarshal, err := json.Marshal(tc.p)
			if err != nil || !bytes.Equal(viaMarshal, got) {
				t.Errorf("json.Marshal = %s, %v; want MarshalJSON's %s", viaMarshal, err, got)
			}
			viaMap, err := json.Marshal(tc.p.Map())
			if err != nil || !bytes.Equal(viaMap, got) {
				t.Errorf("json.Marshal(Map()) = %s, %v; want MarshalJSON's %s", viaMap, err, got)
			}
		})
	}
}

func TestPayloadMapHasTheShapeSendTakes(t *testing.T) {
	m := apns.NewPayload().Alert("hi").CriticalSound("s", 1).Custom("n", 1).Map()
	aps, ok := m["aps"].(map[string]interface{})
	if !ok {
		t.Fatalf(`Map()["aps"] is %T; want map[string]interface{}`, m["aps"])
	}
	if a, ok := aps["alert"].(string); !ok || a != "hi" {
		t.Errorf("alert = %#v; want the string %q", aps["alert"], "hi")
	}
	if _, ok := aps["sound"].(map[string]interface{}); !ok {
		t.Errorf("sound is %T; want map[string]interface{}", aps["sound"])
	}
	if len(m) != 2 || m["n"] != 1 {
		t.Errorf("Map() = %v; want aps and n only", m)
	}
	if m := apns.NewPayload().AlertTitle("t").Map(); m["aps"].(map[string]interface{})["alert"] == nil {
		t.Errorf("alert dictionary missing from %v", m)
	}
}

func TestPayloadMapIsNewOnEveryCall(t *testing.T) {
	p := apns.NewPayload().AlertLocKey("K", "a").URLArgs("u").CriticalSound("s", 1).Custom("c", 1)
	want, _ := p.MarshalJSON()

	m := p.Map() // changing the result leaves the builder alone
	aps := m["aps"].(map[string]interface{})
	alert := aps["alert"].(map[string]interface{})
	alert["loc-args"].([]string)[0] = "changed"
	alert["title"] = "added"
	aps["url-args"].([]string)[0] = "changed"
	aps["sound"].(map[string]interface{})["volume"] = 0
	aps["badge"] = 9
	m["c"] = 2
	if got, _ := p.MarshalJSON(); !bytes.Equal(got, want) {
		t.Errorf("after changing Map's result the builder gives %s; want %s", got, want)
	}

	m = p.Map() // changing the builder leaves an earlier result alone
	before, _ := json.Marshal(m)
	p.AlertLocKey("K2", "b").URLArgs("v").Sound("x").Badge(1).Custom("c", 3).Custom("d", 4)
	if after, _ := json.Marshal(m); !bytes.Equal(after, before) {
		t.Errorf("after changing the builder an earlier Map gives %s; want %s", after, before)
	}
}

func TestPayloadArgsAreCopied(t *testing.T) {
	args := []string{"a", "b"}
	p := apns.NewPayload().AlertLocKey("K", args...).URLArgs(args...)
	args[0] = "changed"
	want := `{"aps":{"alert":{"loc-args":["a","b"],"loc-key":"K"},"url-args":["a","b"]}}`
	if got, _ := p.MarshalJSON(); string(got) != want {
		t.Errorf("got %s; want %s", got, want)
	}
}

func TestPayloadCustomKeyAPSPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error(`Custom("aps", …) did not panic`)
		}
	}()
	apns.NewPayload().Custom("aps", map[string]interface{}{})
}

func TestPayloadThatDoesNotMarshalFails(t *testing.T) {
	for name, p := range map[string]*apns.Payload{
		"custom func":       apns.NewPayload().Custom("f", func() {}),
		"NaN score":         apns.NewPayload().RelevanceScore(math.NaN()),
		"channel as state":  apns.NewPayload().ContentState(make(chan int)),
		"infinite volume":   apns.NewPayload().CriticalSound("s", math.Inf(1)),
		"func as attribute": apns.NewPayload().Attributes(func() {}),
	} {
		if b, err := p.MarshalJSON(); err == nil {
			t.Errorf("%s: MarshalJSON = %s; want an error", name, b)
		}
	}
}

// The builder's payloads pass Send's validation, and the gateway receives exactly MarshalJSON's
// bytes.
func TestPayloadPassesSendOnTheBinaryProtocol(t *testing.T) {
	s := newServer(t)
	c := newClient(t, s)
	p := apns.NewPayload().Alert("hi").Badge(0).Sound("default").ThreadID("t").Custom("n", 1)
	want, err := p.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Send(token(1), time.Now().Add(time.Hour), apns.PRIORITY_IMMEDIATE, p.Map()); err != nil {
		t.Fatal(err)
	}
	if err := c.Send(token(2), time.Time{}, apns.PRIORITY_IMMEDIATE, apns.NewPayload().Map()); err != nil {
		t.Fatalf("empty payload: %v", err)
	}
	big := apns.NewPayload().Custom("pad", strings.Repeat("x", apns.MaxPayloadSize))
	if err := c.Send(token(3), time.Time{}, apns.PRIORITY_IMMEDIATE, big.Map()); !errors.Is(err, apns.ErrPayloadTooLarge) {
		t.Errorf("Send of an oversized payload = %v; want ErrPayloadTooLarge", err)
	}
	bad := apns.NewPayload().Custom("f", func() {})
	if err := c.Send(token(4), time.Time{}, apns.PRIORITY_IMMEDIATE, bad.Map()); !errors.Is(err, apns.ErrPayloadMarshal) {
		t.Errorf("Send of a payload that does not marshal = %v; want ErrPayloadMarshal", err)
	}
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	stop(t, c)
	got := map[string]string{}
	for _, n := range s.Notifications() {
		got[hexOf(n.Token)] = string(n.Payload)
	}
	if got[token(1)] != string(want) || got[token(2)] != `{"aps":{}}` || len(got) != 2 {
		t.Errorf("gateway received %v; want %s for token 1 and {\"aps\":{}} for token 2", got, want)
	}
}

// A *Payload is a Notification's Payload; a content-available-only payload is inferred to be a
// background push.
func TestPayloadIsANotificationPayloadOverHTTP2(t *testing.T) {
	s := newH2Server(t, nil)
	c := newH2Client(t, s)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cases := []struct {
		n        apns.Notification
		pushType string
		priority int
	}{
		{apns.Notification{Payload: apns.NewPayload().AlertTitle("t").AlertBody("b").MutableContent()}, "alert", 10},
		{apns.Notification{Payload: apns.NewPayload().ContentAvailable()}, "background", 5},
		{apns.Notification{Payload: apns.NewPayload().Event(apns.LiveActivityUpdate).Timestamp(time.Unix(1, 0)).
			ContentState(map[string]int{"n": 1}), PushType: "liveactivity", Topic: "com.example.app.push-type.liveactivity"},
			"liveactivity", 10},
	}
	for i, tc := range cases {
		n := tc.n
		n.DeviceToken = token(i)
		resp, err := c.Push(ctx, &n)
		if err != nil || !resp.Sent() {
			t.Fatalf("case %d: Push = %+v, %v", i, resp, err)
		}
		want, _ := n.Payload.(*apns.Payload).MarshalJSON()
		r := s.Requests()[i]
		if !bytes.Equal(r.Payload, want) || r.PushType != tc.pushType || r.Priority != tc.priority {
			t.Errorf("case %d: server got %s, push type %q, priority %d; want %s, %q, %d",
				i, r.Payload, r.PushType, r.Priority, want, tc.pushType, tc.priority)
		}
	}

	// The HTTP/2 limit is 4096 bytes: a payload over it is refused before it is queued.
	big := apns.NewPayload().Custom("pad", strings.Repeat("x", apns.MaxHTTP2PayloadSize))
	if err := c.SendNotification(ctx, &apns.Notification{DeviceToken: token(9), Payload: big}); !errors.Is(err, apns.ErrPayloadTooLarge) {
		t.Errorf("SendNotification of an oversized payload = %v; want ErrPayloadTooLarge", err)
	}
	// Send on an HTTP/2 client takes Map() as well.
	if err := c.Send(token(10), time.Time{}, apns.PRIORITY_IMMEDIATE, apns.NewPayload().Alert("m").Map()); err != nil {
		t.Errorf("Send(Map()) = %v", err)
	}
}
