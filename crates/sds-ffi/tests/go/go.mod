module sds-rs.local/libsds-consumer

go 1.22
