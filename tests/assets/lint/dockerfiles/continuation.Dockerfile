# escape=`
# expect: CV003
FROM --platform=linux/amd64 `
    mcr.microsoft.com/windows/servercore:ltsc2022 AS win
# expect: CV003,CV009
FROM `
# a comment inside the instruction
    mcr.microsoft.com/powershell AS shell
