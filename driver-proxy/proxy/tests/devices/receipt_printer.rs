use openteller_proto::device::v1::{
    CompletionCode, ListReceipts, PaperState, PrintForm, PrintText, ReceiptPrinterCommand,
    ReceiptPrinterSimAction, SetError, SetPaper, TakeReceipt, command, command_completion,
    device_status, receipt_printer_command::Command as Ptr, receipt_printer_result,
    receipt_printer_sim_action::Action as SimPtr, simulator_reply, simulator_request::Action,
};

use crate::support::*;

fn ptr(c: Ptr) -> command::Command {
    command::Command::ReceiptPrinter(ReceiptPrinterCommand { command: Some(c) })
}

fn sim(a: SimPtr) -> Action {
    Action::ReceiptPrinter(ReceiptPrinterSimAction { action: Some(a) })
}

fn paper(s: &openteller_proto::device::v1::DeviceStatus) -> PaperState {
    match s.detail.as_ref().unwrap() {
        device_status::Detail::ReceiptPrinter(r) => r.paper(),
        _ => panic!(),
    }
}

#[tokio::test]
async fn forms_print_to_text_and_pdf_with_the_card_masked() {
    let dir = tempfile::tempdir().unwrap();
    let p = Proxy::start("ReceiptPrinter", dir.path()).await;
    let fields = [
        ("terminal", "T0000001"),
        ("date", "2026-11-21"),
        ("time", "23:59:00"),
        ("card", "6222020200112233445"),
        ("amount", "300.00"),
        ("currency", "CNY"),
        ("stan", "000123"),
        ("rrn", "123456789012"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let (_, done) = p
        .execute(
            "print",
            0,
            ptr(Ptr::PrintForm(PrintForm {
                form_name: "withdrawal".into(),
                fields,
            })),
        )
        .await;
    assert_eq!(
        code(&done),
        CompletionCode::Success,
        "{:?}",
        done.completion
    );
    let Some(command_completion::Result::ReceiptPrinter(r)) = done.result else {
        panic!()
    };
    let Some(receipt_printer_result::Result::Print(printed)) = r.result else {
        panic!()
    };
    let txt = std::fs::read_to_string(
        p.state_dir
            .join("receipts")
            .join(format!("{}.txt", printed.receipt_id)),
    )
    .unwrap();
    assert!(txt.contains("622202*********3445"), "{txt}");
    assert!(!txt.contains("6222020200112233445"));
    let pdf = std::fs::read(
        p.state_dir
            .join("receipts")
            .join(format!("{}.pdf", printed.receipt_id)),
    )
    .unwrap();
    assert!(pdf.starts_with(b"%PDF-"));

    let list = p
        .control(sim(SimPtr::ListReceipts(ListReceipts { limit: 5 })))
        .await;
    let Some(simulator_reply::Data::Receipts(list)) = list.data else {
        panic!()
    };
    assert_eq!(list.receipts[0].receipt_id, printed.receipt_id);
    assert_eq!(
        sim_code(&p.control(sim(SimPtr::TakeReceipt(TakeReceipt {}))).await),
        CompletionCode::Success
    );
    assert_eq!(
        sim_code(&p.control(sim(SimPtr::TakeReceipt(TakeReceipt {}))).await),
        CompletionCode::SequenceError
    );

    let (_, missing) = p
        .execute(
            "form2",
            0,
            ptr(Ptr::PrintForm(PrintForm {
                form_name: "withdrawal".into(),
                fields: Default::default(),
            })),
        )
        .await;
    assert_eq!(error_code(&missing), -101);
    let (_, unknown) = p
        .execute(
            "form3",
            0,
            ptr(Ptr::PrintForm(PrintForm {
                form_name: "../../etc/passwd".into(),
                fields: Default::default(),
            })),
        )
        .await;
    assert_eq!(error_code(&unknown), -100);
}

#[tokio::test]
async fn paper_out_and_jam_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let p = Proxy::start("ReceiptPrinter", dir.path()).await;
    assert_eq!(
        sim_code(
            &p.control(sim(SimPtr::SetPaper(SetPaper {
                paper: PaperState::Low as i32
            })))
            .await
        ),
        CompletionCode::Success
    );
    assert_eq!(paper(&p.status().await), PaperState::Low);
    assert_eq!(
        sim_code(
            &p.control(sim(SimPtr::SetPaper(SetPaper {
                paper: PaperState::Out as i32
            })))
            .await
        ),
        CompletionCode::Success
    );
    let (_, out) = p
        .execute(
            "t",
            0,
            ptr(Ptr::PrintText(PrintText {
                text: "hello".into(),
            })),
        )
        .await;
    assert_eq!(error_code(&out), -123);
    assert_eq!(
        sim_code(
            &p.control(sim(SimPtr::SetPaper(SetPaper {
                paper: PaperState::Full as i32
            })))
            .await
        ),
        CompletionCode::Success
    );
    let armed = p
        .control(Action::SetError(SetError {
            command: "ReceiptPrinter.PrintText".into(),
            error_code: -122,
            count: 1,
        }))
        .await;
    assert_eq!(sim_code(&armed), CompletionCode::Success);
    let (_, jam) = p
        .execute(
            "t2",
            0,
            ptr(Ptr::PrintText(PrintText {
                text: "hello".into(),
            })),
        )
        .await;
    assert_eq!(error_code(&jam), -122);
    assert_eq!(paper(&p.status().await), PaperState::Jammed);
    let (_, r) = p
        .execute("reset", 0, ptr(Ptr::Reset(Default::default())))
        .await;
    assert_eq!(code(&r), CompletionCode::Success);
    let (_, ok) = p
        .execute(
            "t3",
            0,
            ptr(Ptr::PrintText(PrintText {
                text: "hello".into(),
            })),
        )
        .await;
    assert_eq!(code(&ok), CompletionCode::Success);
    let (_, bad) = p
        .execute(
            "t4",
            0,
            ptr(Ptr::PrintText(PrintText {
                text: "bell\u{7}".into(),
            })),
        )
        .await;
    assert_eq!(error_code(&bad), -121);
}
