// PWM duty and frequency meter for the lamp driver output.
//
// The rig samples the node's lamp PWM pin with its own clock and reports, once per
// PWM period, the period and high time in clock cycles and the duty scaled to the
// firmware's duty_u16 range (0..65535), so a test compares what it commanded with
// what the lamp really received. A pin that stops toggling (0 % or 100 % duty, or a
// dead driver) is reported after TIMEOUT cycles with period = 0 and the steady level.
`timescale 1ns / 1ps
`default_nettype none

module pwm_meter #(
    parameter integer WIDTH = 32,
    parameter integer TIMEOUT = 100000
) (
    input  wire             clk,
    input  wire             rst,
    input  wire             pwm_in,
    output reg  [WIDTH-1:0] period,
    output reg  [WIDTH-1:0] high_time,
    output reg  [15:0]      duty_u16,
    output reg              valid
);
    // Two-flop synchroniser: the pin is asynchronous to the rig clock.
    reg sync0, sync1, last;
    always @(posedge clk) begin
        if (rst) begin
            sync0 <= 1'b0;
            sync1 <= 1'b0;
            last <= 1'b0;
        end else begin
            sync0 <= pwm_in;
            sync1 <= sync0;
            last <= sync1;
        end
    end
    wire rising = sync1 & ~last;

    // Counters for the period in progress.
    reg [WIDTH-1:0] count_period;
    reg [WIDTH-1:0] count_high;
    reg             seen_edge;

    // Sequential restoring divider: duty_u16 = high * 65535 / period.
    localparam integer NUM_BITS = WIDTH + 16;
    reg                  dividing;
    reg [NUM_BITS-1:0]   numerator;
    reg [WIDTH:0]        remainder;
    reg [WIDTH-1:0]      divisor;
    reg [NUM_BITS-1:0]   quotient;
    reg [$clog2(NUM_BITS+1)-1:0] bit_index;
    wire [WIDTH:0] shifted = {remainder[WIDTH-1:0], numerator[bit_index - 1'b1]};

    always @(posedge clk) begin
        valid <= 1'b0;
        if (rst) begin
            count_period <= 0;
            count_high <= 0;
            seen_edge <= 1'b0;
            dividing <= 1'b0;
            period <= 0;
            high_time <= 0;
            duty_u16 <= 0;
        end else begin
            if (rising) begin
                if (seen_edge && !dividing) begin
                    period <= count_period;
                    high_time <= count_high;
                    numerator <= ({{(NUM_BITS-WIDTH){1'b0}}, count_high} << 16)
                                 - {{(NUM_BITS-WIDTH){1'b0}}, count_high};
                    divisor <= count_period;
                    remainder <= 0;
                    quotient <= 0;
                    bit_index <= NUM_BITS;
                    dividing <= 1'b1;
                end
                seen_edge <= 1'b1;
                count_period <= 1;
                count_high <= 1;
            end else if (count_period >= TIMEOUT) begin
                // No edge for a long time: the output is steady at the current level.
                period <= 0;
                high_time <= 0;
                duty_u16 <= sync1 ? 16'hFFFF : 16'h0000;
                valid <= 1'b1;
                seen_edge <= 1'b0;
                count_period <= 0;
                count_high <= 0;
            end else begin
                count_period <= count_period + 1'b1;
                if (sync1) count_high <= count_high + 1'b1;
            end

            if (dividing) begin
                if (bit_index == 0) begin
                    dividing <= 1'b0;
                    duty_u16 <= quotient[15:0];
                    valid <= 1'b1;
                end else begin
                    if (shifted >= {1'b0, divisor}) begin
                        remainder <= shifted - {1'b0, divisor};
                        quotient <= {quotient[NUM_BITS-2:0], 1'b1};
                    end else begin
                        remainder <= shifted;
                        quotient <= {quotient[NUM_BITS-2:0], 1'b0};
                    end
                    bit_index <= bit_index - 1'b1;
                end
            end
        end
    end
endmodule

`default_nettype wire
