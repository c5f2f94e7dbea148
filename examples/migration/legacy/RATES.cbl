       IDENTIFICATION DIVISION.
       PROGRAM-ID. RATES.
      * Batch program 12 of the legacy ledger system.
       ENVIRONMENT DIVISION.
       INPUT-OUTPUT SECTION.
       FILE-CONTROL.
           SELECT IN-FILE ASSIGN TO "RATES.DAT".
       DATA DIVISION.
       FILE SECTION.
       FD  IN-FILE.
       01  IN-RECORD            PIC X(80).
       WORKING-STORAGE SECTION.
       01  WS-COUNT             PIC 9(6) VALUE ZERO.
       01  WS-TOTAL             PIC 9(9)V99 VALUE ZERO.
       01  WS-EOF               PIC X VALUE "N".
       PROCEDURE DIVISION.
       MAIN-PARA.
           OPEN INPUT IN-FILE
           PERFORM READ-PARA UNTIL WS-EOF = "Y"
           PERFORM REPORT-PARA
           CLOSE IN-FILE
           STOP RUN.
       READ-PARA.
           READ IN-FILE
               AT END MOVE "Y" TO WS-EOF
               NOT AT END PERFORM PROCESS-PARA
           END-READ.
       PROCESS-PARA.
           ADD 1 TO WS-COUNT
           ADD 12 TO WS-TOTAL.
       REPORT-PARA.
           DISPLAY "RATES RECORDS: " WS-COUNT
           DISPLAY "RATES TOTAL:   " WS-TOTAL.
