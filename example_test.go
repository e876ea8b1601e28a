package apns_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

// The README flow against the apnstest mock gateway and feedback service: one token is
// rejected as invalid, and the feedback service knows one uninstalled app.
func Example() {
	gateway := apnstest.NewServer()
	defer gateway.Close()
	feedback := apnstest.NewFeedbackServer()
	defer feedback.Close()

	badToken := "bad0000000000000000000000000000000000000000000000000000000000001"
	bad, _ := hex.DecodeString(badToken)
	gateway.RejectToken(badToken, 8)
	feedback.Add(bad, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))

	cert, key := apnstest.ClientCertPEM()
	client, err := apns.CreateClient(gateway.Addr, cert, key, false,
		apns.WithTLSConfig(gateway.ClientTLSConfig()), // trust the mock's certificate
		apns.WithAssumeSentTimeout(100*time.Millisecond))
	if err != nil {
		panic(err)
	}
	client.SetCallback(func(m *apns.Message, code uint8) {
		fmt.Printf("rejected %x… with status %d (%v)\n", m.Token[:4], code, apns.Status(code))
	})

	feedbackClient, err := client.SetupFeedbackClient(feedback.Addr, time.Hour)
	if err != nil {
		panic(err)
	}
	tokens, err := feedbackClient.GetBadTokens()
	if err != nil {
		panic(err)
	}
	fmt.Printf("feedback: %s… gone since %s\n", tokens[0].Token[:8], tokens[0].Timestamp.Format(time.RFC3339))

	if err := client.Start(2); err != nil {
		panic(err)
	}
	payload := map[string]interface{}{"aps": map[string]interface{}{"alert": "hello world!"}, "data": 42}
	for i := 0; i < 99; i++ {
		token := fmt.Sprintf("%064x", i)
		if err := client.Send(token, time.Now().Add(time.Hour), apns.PRIORITY_IMMEDIATE, payload); err != nil {
			panic(err)
		}
	}
	if err := client.Send(badToken, time.Time{}, apns.PRIORITY_IMMEDIATE, payload); err != nil {
		panic(err)
	}
	if err := client.Stop(); err != nil {
		panic(err)
	}
	fmt.Println("the gateway accepted", gateway.Count(), "notifications")
	// Output:
	// feedback: bad00000… gone since 2026-01-02T03:04:05Z
	// rejected bad00000… with status 8 (invalid token)
	// the gateway accepted 99 notifications
}

// Send reports bad input with its own error.
func ExampleClient_Send() {
	client, err := apns.CreateClient("gateway.push.apple.com", nil, nil, false)
	if err != nil {
		panic(err)
	}
	defer client.Stop()
	err = client.Send("not a token", time.Time{}, apns.PRIORITY_IMMEDIATE, map[string]interface{}{"aps": map[string]interface{}{"alert": "hi"}})
	fmt.Println(err)
	// Output:
	// apns: device token is not hexadecimal
}

// A client with token (.p8) authentication against the apnstest HTTP/2 mock, sending one
// notification synchronously with Push and one through the queue.
func ExampleCreateTokenClient() {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader) // stands in for Apple's .p8 key
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	p8 := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})

	server := apnstest.NewUnstartedHTTP2Server()
	server.Keys = map[string]*ecdsa.PublicKey{"ABC123DEFG": &key.PublicKey}
	server.TeamID = "DEF123GHIJ"
	server.Start()
	defer server.Close()
	server.Respond("bad1", apnstest.Response{Status: 410, Reason: "Unregistered", Timestamp: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)})

	client, err := apns.CreateTokenClient(server.URL, p8, "ABC123DEFG", "DEF123GHIJ", "com.example.app",
		apns.WithTLSConfig(server.ClientTLSConfig()))
	if err != nil {
		panic(err)
	}
	client.SetRejectionCallback(func(r *apns.Rejection) {
		fmt.Println("rejected:", r.StatusCode, r.Reason, r.Timestamp.Format(time.RFC3339))
	})
	if err := client.Start(1); err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // every call ends
	defer cancel()
	resp, err := client.Push(ctx, &apns.Notification{
		DeviceToken: "0123456789abcdef",
		Payload:     map[string]any{"aps": map[string]any{"alert": "hello"}},
	})
	if err != nil {
		panic(err)
	}
	fmt.Println("push:", resp.StatusCode, resp.Sent())
	if err := client.SendNotification(ctx, &apns.Notification{
		DeviceToken: "bad1",
		Payload:     map[string]any{"aps": map[string]any{"alert": "hello"}},
	}); err != nil {
		panic(err)
	}
	if err := client.Stop(); err != nil {
		panic(err)
	}
	fmt.Println("topic:", server.Requests()[0].Topic)
	// Output:
	// push: 200 true
	// rejected: 410 Unregistered 2026-01-02T03:04:05Z
	// topic: com.example.app
}
