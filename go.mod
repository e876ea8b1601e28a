module github.com/Kwik-messenger/apns-go

go 1.26
