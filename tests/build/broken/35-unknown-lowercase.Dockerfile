frm alpine
