package apns_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

// A broadcast round against the apnstest mock: create a channel, start a Live Activity on
// a device with push-to-start, subscribed to the channel, send it updates through the
// channel, end it, and delete the channel. Against Apple, the client is created for
// api.push.apple.com (or the sandbox) and channel management goes to Apple's management host
// without WithBroadcastManagementURL.
func ExampleClient_Broadcast() {
	// The mock, and a provider-token client of it: Live Activities need token auth.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	server := apnstest.NewUnstartedHTTP2Server()
	server.Keys = map[string]*ecdsa.PublicKey{"KEYID12345": &key.PublicKey}
	server.Start()
	defer server.Close()
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	p8 := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})

	const bundleID = "com.example.scores"
	client, err := apns.CreateTokenClient(server.URL, p8, "KEYID12345", "TEAMID1234", bundleID,
		apns.WithTLSConfig(server.ClientTLSConfig()), // trust the mock's certificate
		apns.WithBroadcastManagementURL(server.URL))  // the mock also serves channel management
	if err != nil {
		panic(err)
	}
	if err := client.Start(1); err != nil {
		panic(err)
	}
	defer client.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // every call ends
	defer cancel()

	// 1. A channel for one match. Score updates are frequent: no message stored.
	channel, err := client.CreateChannel(ctx, bundleID, apns.NoMessageStored)
	if err != nil {
		panic(err)
	}
	fmt.Println("channel created:", channel.StoragePolicy)

	// 2. Start the activity on a device with its push-to-start token; it subscribes to the
	// channel (iOS 18).
	now := time.Now()
	start := apns.NewPayload().Event(apns.LiveActivityStart).Timestamp(now).
		AttributesType("MatchAttributes").Attributes(map[string]string{"home": "Lions", "away": "Tigers"}).
		ContentState(map[string]int{"home": 0, "away": 0}).
		AlertTitle("Kick-off").AlertBody("Lions vs Tigers has started").
		InputPushChannel(channel.ID)
	resp, err := client.Push(ctx, &apns.Notification{
		DeviceToken: "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90", // push-to-start token
		Topic:       bundleID + ".push-type.liveactivity",
		PushType:    "liveactivity",
		Payload:     start,
	})
	if err != nil || !resp.Sent() {
		panic(fmt.Sprint(resp, err))
	}
	var sent struct {
		Aps struct {
			Channel string `json:"input-push-channel"`
		} `json:"aps"`
	}
	json.Unmarshal(server.Requests()[0].Payload, &sent)
	fmt.Println("activity started on the device, subscribed to the channel:", sent.Aps.Channel == channel.ID)

	// 3. Updates to every subscriber: one request each, whatever the audience.
	for i, score := range []map[string]int{{"home": 1, "away": 0}, {"home": 1, "away": 1}} {
		update := apns.NewPayload().Event(apns.LiveActivityUpdate).Timestamp(now.Add(time.Duration(i+1) * time.Minute)).
			ContentState(score)
		resp, err := client.Broadcast(ctx, &apns.BroadcastNotification{ChannelID: channel.ID, Payload: update})
		if err != nil || !resp.Sent() {
			panic(fmt.Sprint(resp, err))
		}
	}

	// 4. The end. (SendBroadcast queues a broadcast instead, like SendNotification; a
	// failure then reaches SetRejectionCallback.)
	end := apns.NewPayload().Event(apns.LiveActivityEnd).Timestamp(now.Add(90 * time.Minute)).
		ContentState(map[string]int{"home": 2, "away": 1}).DismissalDate(now.Add(95 * time.Minute))
	resp, err = client.Broadcast(ctx, &apns.BroadcastNotification{ChannelID: channel.ID, Payload: end})
	if err != nil || !resp.Sent() {
		panic(fmt.Sprint(resp, err))
	}

	// 5. The match is over: delete the channel. Its ID is never issued again.
	if err := client.DeleteChannel(ctx, bundleID, channel.ID); err != nil {
		panic(err)
	}
	ids, err := client.Channels(ctx, bundleID)
	if err != nil {
		panic(err)
	}
	fmt.Println("channels left:", len(ids))

	for _, b := range server.Broadcasts(channel.ID) {
		var p struct {
			Aps struct {
				Event        string         `json:"event"`
				ContentState map[string]int `json:"content-state"`
			} `json:"aps"`
		}
		json.Unmarshal(b.Payload, &p)
		fmt.Printf("broadcast %s, expiration %s: %s %v\n", b.PushType, b.Expiration, p.Aps.Event, p.Aps.ContentState)
	}
	// Output:
	// channel created: no message stored
	// activity started on the device, subscribed to the channel: true
	// channels left: 0
	// broadcast liveactivity, expiration 0: update map[away:0 home:1]
	// broadcast liveactivity, expiration 0: update map[away:1 home:1]
	// broadcast liveactivity, expiration 0: end map[away:1 home:2]
}
