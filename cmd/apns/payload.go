package main

// This file owns the payload flags of push and the one function that turns them into a
// payload. When the library's payload builder (apns.NewPayload) lands, buildPayload is the
// only place to change.

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
)

// payloadFlags are push's flags that make the payload.
type payloadFlags struct {
	json             string // -payload: JSON text, or @FILE
	alert, title     string
	sound            string
	badge            int // -1: none
	contentAvailable bool
}

func (p *payloadFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&p.json, "payload", "", "the payload as `JSON`, or @FILE to read it from a file; -alert etc. are merged into its \"aps\"")
	fs.StringVar(&p.alert, "alert", "", "alert `text` (aps.alert, or aps.alert.body with -title)")
	fs.StringVar(&p.title, "title", "", "alert `title` (aps.alert.title)")
	fs.StringVar(&p.sound, "sound", "", "sound `name` (aps.sound), e.g. default")
	fs.IntVar(&p.badge, "badge", -1, "badge `number` (aps.badge); 0 removes the badge, -1 leaves it alone")
	fs.BoolVar(&p.contentAvailable, "content-available", false, "set aps.content-available to 1 (a background push)")
}

// buildPayload returns the payload the flags describe. It is the single place that knows the
// payload's shape.
func buildPayload(p *payloadFlags) (map[string]any, error) {
	if p.badge < -1 {
		return nil, fmt.Errorf("-badge is %d; want 0 or more (0 removes the badge; -1, the default, leaves it alone)", p.badge)
	}
	payload := map[string]any{}
	if p.json != "" {
		text := []byte(p.json)
		if name, ok := strings.CutPrefix(p.json, "@"); ok {
			var err error
			if text, err = os.ReadFile(name); err != nil {
				return nil, err
			}
		}
		if err := json.Unmarshal(text, &payload); err != nil {
			return nil, fmt.Errorf("-payload is not a JSON object: %v", err)
		}
	}
	aps, ok := payload["aps"].(map[string]any)
	if !ok {
		if _, present := payload["aps"]; present {
			return nil, errors.New(`-payload: "aps" is not an object`)
		}
		aps = map[string]any{}
	}
	switch {
	case p.title != "":
		alert := map[string]any{"title": p.title}
		if p.alert != "" {
			alert["body"] = p.alert
		}
		aps["alert"] = alert
	case p.alert != "":
		aps["alert"] = p.alert
	}
	if p.sound != "" {
		aps["sound"] = p.sound
	}
	if p.badge >= 0 {
		aps["badge"] = p.badge
	}
	if p.contentAvailable {
		aps["content-available"] = 1
	}
	if len(aps) > 0 {
		payload["aps"] = aps
	}
	if len(payload) == 0 {
		return nil, errors.New("no payload: give -payload, or -alert, -title, -badge, -sound or -content-available")
	}
	return payload, nil
}
